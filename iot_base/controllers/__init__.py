from . import provisioning
from . import app
from . import jwks
from . import emqx
from . import rabbitmq
from . import claim
