"""Apache Airflow provider for Skatteverket's Skattekonto bulk service (scope ``skahmst``)."""

__version__ = "0.1.0"
