from . import iot_credentials_new
from . import iot_credentials_secret_show
from . import iot_mqtt_command
from . import iot_mqtt_device_register
