from . import iot_credentials_new
from . import iot_credentials_secret_show
