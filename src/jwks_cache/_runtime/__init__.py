"""The runtime: the Registry, its one task group, and the providers it owns.

``_registry`` holds the lifecycle and the public methods; ``_provider`` one provider's state;
``_refresh`` one refresh; ``_scheduler`` when refreshes run; ``_persistence`` snapshots and the
fleet; ``_boundary`` turns any task failure into a typed error. Edges (``_asgi``, ``_cli``) use
the Registry's public methods only and are never imported from here.
"""
