from . import auth
from . import provisioning
from . import rabbitmq
from . import app
from . import jwks
