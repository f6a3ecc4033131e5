from . import auth
