"""Spark configuration for Puffin's Iceberg catalogs, and the jars local Spark needs.

``spark_conf`` turns the catalog dicts given to ``puffin.connect(catalogs=...)`` (the same
properties pyiceberg's ``load_catalog`` takes) into Iceberg ``SparkCatalog`` conf, so Spark
and Puffin see the same tables under the same names (``lake.db.t`` in both):

- ``type: sql`` on SQLite (``sqlite:////abs/c.db``) -> Iceberg ``JdbcCatalog`` on the same
  file with ``jdbc.schema-version=V1``, the layout pyiceberg's ``SqlCatalog`` creates; on
  PostgreSQL (``postgresql+psycopg2://u:p@host/db``) -> ``jdbc:postgresql://host/db`` (the
  PostgreSQL JDBC driver must be in ``extra_jars``).
- ``type: rest`` -> Iceberg's REST catalog; ``type: glue`` -> ``GlueCatalog`` with S3FileIO.
- The connection's S3 settings -> S3FileIO properties (endpoint, path-style access, region,
  and, in local mode only, explicit credentials: on EMR the cluster's role supplies them and
  no secret is written into a job file).

Tables are not cached in Spark (``cache-enabled=false``): Puffin commits to the same tables
through pyiceberg, and Spark must see those commits. The first catalog is Spark's default catalog (``db.t`` = ``lake.db.t``), the session time zone
is UTC, and there is no Hive metastore (``spark.sql.catalogImplementation=in-memory``).

Local mode also gets its class path: the Iceberg runtime jar with its Jackson relocated
(``~/.cache/puffin/iceberg-spark-runtime-relocated.jar``, or ``PUFFIN_ICEBERG_SPARK_JAR``) and
the SQLite JDBC driver (``/usr/share/java/sqlite-jdbc.jar``, or ``PUFFIN_SQLITE_JDBC_JAR``),
both made by ``bash scripts/install_spark_iceberg.sh``.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

from puffin.errors import NotSupportedError, PuffinError
from puffin.storage import S3Config

INSTALL_HINT = "bash scripts/install_spark_iceberg.sh"
EXTENSIONS = "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions"
CATALOG_TYPES = ("sql", "rest", "glue")
# pyiceberg-only properties: they mean nothing to Iceberg's Java catalogs.
_PYICEBERG_ONLY = ("type", "py-io-impl", "echo", "pool_pre_ping", "init_catalog_tables")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(os.environ.get("PUFFIN_CACHE_DIR") or Path(base) / "puffin")


def runtime_jar() -> Path:
    return Path(os.environ.get("PUFFIN_ICEBERG_SPARK_JAR") or cache_dir() / "iceberg-spark-runtime-relocated.jar")


def sqlite_jdbc_jar() -> Path:
    return Path(os.environ.get("PUFFIN_SQLITE_JDBC_JAR") or "/usr/share/java/sqlite-jdbc.jar")


def local_spark_missing(jars: bool = True) -> str | None:
    """None when local Spark + Iceberg can run here, else what is missing and how to install it.

    jars=False checks only Java and pyspark (the jars a job needs depend on its catalogs).
    """
    import shutil
    from importlib import metadata

    java_home = os.environ.get("JAVA_HOME")
    if not (java_home and os.access(os.path.join(java_home, "bin", "java"), os.X_OK)) and not shutil.which("java"):
        return f"no java on PATH or in JAVA_HOME (install: {INSTALL_HINT})"
    try:
        version = metadata.version("pyspark")
    except metadata.PackageNotFoundError:
        return f"pyspark is not installed (install: {INSTALL_HINT})"
    if not version.startswith("3.5."):
        return f"pyspark {version} is installed; the Iceberg 1.10 runtime jar needs pyspark 3.5.x ({INSTALL_HINT})"
    for jar in (runtime_jar(), sqlite_jdbc_jar()) if jars else ():
        if not jar.is_file():
            return f"{jar} is missing (install: {INSTALL_HINT})"
    return None


def local_jars(catalogs: dict[str, dict], extra: tuple[str, ...] | list[str] = ()) -> list[str]:
    """The class path of local Spark for these catalogs; PuffinError with the fix when missing."""
    jars = [runtime_jar()]
    if any(_kind(n, c) == "sql" and str(c.get("uri", "")).startswith("sqlite") for n, c in catalogs.items()):
        jars.append(sqlite_jdbc_jar())
    missing = [str(j) for j in jars if not j.is_file()]
    if missing:
        raise PuffinError(f"local Spark needs {', '.join(missing)} (missing); install it with: {INSTALL_HINT}")
    missing = [j for j in extra if not os.path.isfile(j)]
    if missing:
        raise PuffinError(f"spark extra_jars not found: {', '.join(missing)}")
    return [str(j) for j in jars] + list(extra)


def spark_conf(catalogs: dict[str, dict], s3: S3Config, settings) -> dict[str, str]:
    """Spark conf for every catalog, plus the session-wide settings; ``settings.conf`` wins."""
    local = settings.mode == "local"
    conf = {
        "spark.sql.extensions": EXTENSIONS,
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.catalogImplementation": "in-memory",
    }
    for name, props in catalogs.items():
        conf.update(catalog_conf(name, props, s3, credentials=local))
    if catalogs:
        conf["spark.sql.defaultCatalog"] = next(iter(catalogs))
    if local:
        conf.update(local_conf(settings.master, settings.driver_memory,
                               os.pathsep.join(local_jars(catalogs, settings.extra_jars))))
        conf.update({"spark.app.name": "puffin", "spark.sql.shuffle.partitions": "4"})
    conf.update(settings.conf)
    return conf


def local_conf(master: str, driver_memory: str, classpath: str) -> dict[str, str]:
    """A Spark on this machine: its master, memory and class path, no UI, on the loopback."""
    return {
        "spark.master": master,
        "spark.driver.memory": driver_memory,
        # On the JVM's own class path, not spark.jars: java.sql.DriverManager must see the
        # JDBC driver that Iceberg's JdbcCatalog asks it for.
        "spark.driver.extraClassPath": classpath,
        "spark.executor.extraClassPath": classpath,
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
    }


def catalog_conf(name: str, props: dict, s3: S3Config, credentials: bool = True) -> dict[str, str]:
    """``spark.sql.catalog.<name>.*`` for one pyiceberg catalog config."""
    kind = _kind(name, props)
    if kind not in CATALOG_TYPES:
        raise NotSupportedError(f"catalog {name!r} has type {kind!r}; Spark writes support catalog types "
                                f"{', '.join(CATALOG_TYPES)}")
    key = f"spark.sql.catalog.{name}"
    out = {key: "org.apache.iceberg.spark.SparkCatalog"}
    passed = {k: str(v) for k, v in props.items() if k not in _PYICEBERG_ONLY and v is not None}
    # Puffin (pyiceberg) commits to the same tables: Spark must load them fresh, not from a cache.
    passed.setdefault("cache-enabled", "false")
    if kind == "sql":
        passed.update(_jdbc(name, passed.pop("uri", "")))
        passed.setdefault("jdbc.schema-version", "V1")  # the schema pyiceberg's SqlCatalog uses
        out[f"{key}.catalog-impl"] = "org.apache.iceberg.jdbc.JdbcCatalog"
    elif kind == "rest":
        out[f"{key}.type"] = "rest"
    else:
        out[f"{key}.catalog-impl"] = "org.apache.iceberg.aws.glue.GlueCatalog"
        passed.setdefault("io-impl", "org.apache.iceberg.aws.s3.S3FileIO")
    if kind == "glue" or str(passed.get("warehouse", "")).startswith(("s3://", "s3a://")):
        passed.setdefault("io-impl", "org.apache.iceberg.aws.s3.S3FileIO")
    if passed.get("io-impl", "").endswith("S3FileIO") or kind == "rest":
        for k, v in _s3_props(s3, credentials).items():
            passed.setdefault(k, v)
    out.update({f"{key}.{k}": v for k, v in passed.items()})
    return out


def _kind(name: str, props: dict) -> str:
    kind = props.get("type")
    if kind:
        return str(kind).lower()
    uri = str(props.get("uri", ""))  # pyiceberg's inference, when type is left out
    if uri.startswith("http"):
        return "rest"
    if uri.startswith("thrift"):
        return "hive"
    if uri.startswith(("sqlite", "postgresql")):
        return "sql"
    raise PuffinError(f"catalog {name!r}: give a 'type' ({', '.join(CATALOG_TYPES)}); cannot infer it from "
                      f"uri {uri!r}")


def _jdbc(name: str, uri: str) -> dict[str, str]:
    """A SQLAlchemy URL (as pyiceberg's SqlCatalog takes) -> JdbcCatalog's uri and login."""
    if uri.startswith("jdbc:"):
        return {"uri": uri}
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):].split("?", 1)[0]
        if not path or path == ":memory:":
            raise NotSupportedError(f"catalog {name!r}: an in-memory SQLite catalog cannot be shared with Spark; "
                                    "use a file (sqlite:////abs/path/catalog.db)")
        return {"uri": "jdbc:sqlite:" + os.path.abspath(path)}
    if uri.startswith("postgresql"):
        u = urlsplit(uri)
        out = {"uri": f"jdbc:postgresql://{u.hostname}{':' + str(u.port) if u.port else ''}{u.path}"}
        if u.username:
            out["jdbc.user"] = unquote(u.username)
        if u.password:
            out["jdbc.password"] = unquote(u.password)
        return out
    raise NotSupportedError(f"catalog {name!r}: Spark writes support SQL catalogs on SQLite files and "
                            f"PostgreSQL, not uri {uri.split(':', 1)[0]!r}")


def _s3_props(s3: S3Config, credentials: bool) -> dict[str, str]:
    out = {"client.region": s3.region} if s3.region else {}
    if s3.endpoint_url:
        out["s3.endpoint"] = s3.endpoint_url
        out["s3.path-style-access"] = "true"  # MinIO, SeaweedFS, LocalStack
    if credentials and s3.access_key_id and s3.secret_access_key:
        out["s3.access-key-id"] = s3.access_key_id.value
        out["s3.secret-access-key"] = s3.secret_access_key.value
        if s3.session_token:
            out["s3.session-token"] = s3.session_token.value
    return out
