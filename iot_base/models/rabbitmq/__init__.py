from . import iot_broker_rabbitmq
from . import iot_rabbitmq_store
