from . import test_rabbitmq_http
from . import test_rabbitmq_broker
from . import test_local_broker
from . import test_rabbitmq_jwt
from . import test_listener_rabbitmq
from . import test_rabbitmq_store
from . import test_rabbitmq_dots
