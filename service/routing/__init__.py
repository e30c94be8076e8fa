"""Routing policies between the transport and the data plane: a request that names a route (or
reaches an endpoint whose task has a default route) is answered by a policy that calls the data
plane, instead of by one model. Today: confidence cascades (:mod:`.cascade`), configured by the
routes file (:mod:`.config`), served by :class:`.routes.Routing`, calibrated by :mod:`.calibration`.

Layers: transport -> routing (here) -> data plane -> scheduling -> compute. This package's top level
imports only the routes file's schema, so the server can check a routes file before anything imports
the data plane (and ``prometheus_client``, which must see ``PROMETHEUS_MULTIPROC_DIR`` first).
"""

from presso.service.routing.config import ModelInfo, RoutesError, RoutesFile, check_routes, load_routes

__all__ = ["ModelInfo", "RoutesError", "RoutesFile", "check_routes", "load_routes"]
