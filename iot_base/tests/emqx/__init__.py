from . import test_emqx_http
from . import test_emqx_jwt
from . import test_emqx_store
