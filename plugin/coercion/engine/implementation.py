"""How this implementation names itself in what it writes (PS3.7 D.3.3.2, PS3.10 7.1).

The one place the version is written: the package, pyproject.toml and the file meta of every
de-identified instance read it from here.
"""

VERSION = "0.1.0"
# A fixed UID for this implementation (2.25 + the UUID of its name).
IMPLEMENTATION_CLASS_UID = "2.25.153829187441935618839530342394853712945"
IMPLEMENTATION_VERSION_NAME = ("COERCION_" + VERSION.replace(".", "_"))[:16]
