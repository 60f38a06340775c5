"""The ``es`` output: Elasticsearch 7/8/9 and OpenSearch 1/2/3 through the Bulk API.

Split by concern: :mod:`.config` (the options), :mod:`.formatting` (records to NDJSON
bodies), :mod:`.transport` (the one-method transport and its urllib3 implementation),
:mod:`.memory` (an in-memory transport for tests), :mod:`.retry` (what each bulk item's
answer means) and :mod:`.output` (the plugin).
"""

from __future__ import annotations

from .config import ElasticsearchOutputOptions
from .formatting import BulkFormatter, IndexTemplate
from .memory import MemoryTransport
from .output import ElasticsearchOutput
from .retry import Verdict, judge
from .transport import BulkResponse, HttpTransport, Transport

__all__ = [
    "BulkFormatter",
    "BulkResponse",
    "ElasticsearchOutput",
    "ElasticsearchOutputOptions",
    "HttpTransport",
    "IndexTemplate",
    "MemoryTransport",
    "Transport",
    "Verdict",
    "judge",
]
