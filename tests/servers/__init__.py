"""The real processes the tests start: Jupyter server, JupyterHub, Rucio, Prometheus, VictoriaMetrics, vmalert,
Alertmanager."""
