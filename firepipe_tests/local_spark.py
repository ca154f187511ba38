"""One local Spark session for a test module, and its JVM ended with it."""

from collections.abc import Iterator
from typing import Any


def local_spark(app: str) -> Iterator[Any]:
    """A local[1] session in UTC with two shuffle partitions and no UI, for a module-scoped
    fixture (`yield from local_spark(...)`). `stop()` keeps the driver's JVM for a next session
    in the process, and none comes: it is ended too, rather than carry ~0.5 GB and its py4j
    gateway through the rest of the suite."""
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[1]")
        .appName(app)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    yield session
    session.stop()
    gateway = SparkContext._gateway
    if gateway is not None:
        gateway.shutdown()
        gateway.proc.kill()
        gateway.proc.wait(timeout=30)
        SparkContext._gateway = None
        SparkContext._jvm = None
