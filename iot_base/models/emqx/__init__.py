from . import iot_broker_emqx
from . import iot_emqx_store
