from . import iot_mosquitto_sync
