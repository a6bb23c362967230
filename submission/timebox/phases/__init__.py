"""The online run's phases, one module each, in the order they run: extract (with the early output), head,
second backbone, fine-tune (with the output rules at its end), ensemble, finalise. Each takes the
:class:`~timebox.phases.context.Context` and the results of the phases before it, and returns its own."""
