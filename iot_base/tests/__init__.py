from . import test_credentials
from . import test_access
from . import test_concurrency
