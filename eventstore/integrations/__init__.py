"""Integrations with agent runtimes, each behind its own optional extra.

* ``eventstore.integrations.langgraph``: ``EventStoreSaver``, a LangGraph
  checkpointer (``pip install 'agent-eventstore[langgraph]'``).

Like the CLI, an integration is a composition root: it may import the read
models of ``projections`` (lazily, when it is used), which the rest of
``eventstore`` never does.
"""
