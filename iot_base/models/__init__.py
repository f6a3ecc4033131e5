from . import iot_credentials
from . import iot_credentials_secret
from . import res_users
from . import res_config_settings
