"""engine-runtime: streaming engines with stop/kill cancellation, served over gRPC.

The one import root of the distribution. Its subpackages are the folders at the top of the repository::

    engine_runtime.server      the runtime (context, engines, registry, errors) and the gRPC server
    engine_runtime.client      the Python client: remote engines that behave like local ones
    engine_runtime.generated   the protobuf and gRPC code generated from protos/

Example::

    from engine_runtime.server import Context, EngineRegistry
    from engine_runtime.client import EngineClient
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
