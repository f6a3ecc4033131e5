from . import test_mosquitto_sync
from . import test_iot_app_mosquitto
