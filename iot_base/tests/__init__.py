from . import test_credentials
from . import test_topic_acl
from . import test_access
from . import test_concurrency
from . import test_acl_rules
from . import test_devices
from . import test_provisioning_fuzz
from . import test_iot_app
from . import test_mqtt_client
from . import test_security_matrix
from . import test_broker_fuzz
from . import test_broker_log
from . import test_client_id
from . import test_broker_session
from . import test_neutralize
from . import test_listener
from . import test_listener_security
from . import test_listener_tour
from . import test_store_acl
from . import test_settings_tour
from . import test_listener_dbloss
from . import test_all_views
from . import test_x509_tools
from . import test_broker_api
from . import test_listener_process
from . import test_bus_presence
from . import test_fleet_dashboard
from .emqx import *  # noqa: F403
from .mosquitto import *  # noqa: F403
from .rabbitmq import *  # noqa: F403
from . import test_migration_settings
from . import test_throttle
from . import test_command_request
