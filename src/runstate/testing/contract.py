"""The shared contract suite, run against every adapter: subclass ``RunStateStoreContract``.

Implement ``make_store`` (and ``make_small_payload_store``). Each call must return a new, open
store object; stores made within one test must see the same data (the suite opens two to test
concurrency across connections). Tests use fresh random run ids, so the stores need not be
empty. The rules are those of docs/design.md, "The store contract"; each focused suite
(``StoreContract``, ``ValidationContract``, ``OutboxContract``, ``CatalogContract``,
``QueryContract``) can also
be used alone.
"""

from __future__ import annotations

from ._support import (
    ContractBase,
    as_catalog,
    as_outbox,
    bad,
    bootstrap_input,
    drain_outbox,
    new_run_id,
)
from .catalog_contract import CatalogContract
from .edges_contract import EdgesContract
from .outbox_contract import OutboxContract
from .query_contract import QueryContract
from .store_contract import StoreContract
from .validation_contract import ValidationContract

__all__ = [
    "CatalogContract",
    "ContractBase",
    "EdgesContract",
    "OutboxContract",
    "QueryContract",
    "RunStateStoreContract",
    "StoreContract",
    "ValidationContract",
    "as_catalog",
    "as_outbox",
    "bad",
    "bootstrap_input",
    "drain_outbox",
    "new_run_id",
]


class RunStateStoreContract(
    StoreContract,
    ValidationContract,
    EdgesContract,
    OutboxContract,
    CatalogContract,
    QueryContract,
):
    """Every rule of the store contract, the outbox and the catalog, the edges of every
    input, plus a model test."""

    # -- the model-based property test ---------------------------------------------------------

    def test_store_agrees_with_a_simple_model(self) -> None:
        from ._model import check_against_model

        check_against_model(self.make_store, self.hypothesis_max_examples)
