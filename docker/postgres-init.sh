#!/bin/sh
# The two users and databases of docker/compose.cluster.yaml: Orthanc's index and the plugin's
# stores, with the password of the coercion_db_password secret.
set -eu
password="$(head -n 1 /run/secrets/coercion_db_password)"
psql -v ON_ERROR_STOP=1 --username postgres <<SQL
CREATE USER orthanc PASSWORD '$password';
CREATE DATABASE orthanc OWNER orthanc;
CREATE USER coercion PASSWORD '$password';
CREATE DATABASE coercion OWNER coercion;
SQL
