"""Everything else the tests share: stand-ins, Tornado apps, schemas, deploy files, the compatibility matrix."""
