"""Runtime shared by every generated REST package: Connexion wiring and its workarounds.

`app` builds the Connexion app of a contract; `stack` is Connexion's middleware stack with its
per-request set-up done once per operation, and each routed request handled by its operation's
pipeline in one frame (`prepared` holds its validation middlewares, `views` its views
decorated once); `problems` and `errors` turn every error into a
typed problem+json; `guards` refuses what no contract admits before Connexion reads it;
`compiled`, `validators` and `messages` validate against the contract with jsonschema-rs and
word the refusals without the submitted values; `json_codec` reads and writes JSON with orjson;
`replies` is what generated views return. The names below are the runtime's public surface.
"""

from .app import Lifespan, TokenInfo, TokenVerifier, add_outermost, build_app
from .compiled import (
    PARAMETER,
    REQUEST,
    RESPONSE,
    CompiledValidator,
    compiled_schema,
    compiled_validator,
    native_pattern,
)
from .errors import HTTP_METHODS, add_error_handlers, documented_methods
from .guards import DEFAULT_MAX_BODY_BYTES, MAX_JSON_DEPTH, RequestGuards, json_depth
from .json_codec import FastJSON, loads_json
from .messages import validation_message, validation_pointer
from .prepared import (
    PreparedRequestValidation,
    PreparedResponseValidation,
    PreparedURIParser,
)
from .problems import (
    PROBLEM_TYPE_BASE,
    PROBLEM_TYPES,
    ValidationProblem,
    json_pointer,
    problem_document,
    problem_response,
    problem_type,
    send_problem,
)
from .replies import JSON_HEADERS, Reply, json_reply, no_content
from .stack import OperationPipelines, SwaggerUIPaths, middleware_stack
from .validators import (
    SafeJSONRequestBodyValidator,
    SafeJSONResponseBodyValidator,
    SafeParameterValidator,
    SafeTextResponseBodyValidator,
    query_pairs,
    validator_map,
)
from .views import prepare_views

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "HTTP_METHODS",
    "JSON_HEADERS",
    "MAX_JSON_DEPTH",
    "PARAMETER",
    "PROBLEM_TYPES",
    "PROBLEM_TYPE_BASE",
    "REQUEST",
    "RESPONSE",
    "CompiledValidator",
    "FastJSON",
    "Lifespan",
    "OperationPipelines",
    "PreparedRequestValidation",
    "PreparedResponseValidation",
    "PreparedURIParser",
    "Reply",
    "RequestGuards",
    "SafeJSONRequestBodyValidator",
    "SafeJSONResponseBodyValidator",
    "SafeParameterValidator",
    "SafeTextResponseBodyValidator",
    "SwaggerUIPaths",
    "TokenInfo",
    "TokenVerifier",
    "ValidationProblem",
    "add_error_handlers",
    "add_outermost",
    "build_app",
    "compiled_schema",
    "compiled_validator",
    "documented_methods",
    "json_depth",
    "json_pointer",
    "json_reply",
    "loads_json",
    "middleware_stack",
    "native_pattern",
    "no_content",
    "prepare_views",
    "problem_document",
    "problem_response",
    "problem_type",
    "query_pairs",
    "send_problem",
    "validation_message",
    "validation_pointer",
    "validator_map",
]
