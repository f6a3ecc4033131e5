from . import iot_listen
