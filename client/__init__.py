"""The Python client: remote engines that behave like local ones."""

__all__: list[str] = []
