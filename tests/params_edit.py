"""Edit one dotted key of a params dict (shared by the params-validation and fault-injection tests)."""

from typing import Any

DELETE = object()  # pass as the value to remove the key


def set_key(params: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        params = params[key]
    if value is DELETE:
        del params[last]
    else:
        params[last] = value
