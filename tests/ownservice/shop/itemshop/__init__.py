"""itemshop: a small Klein service of another team, and its partial FastAPI rewrite.

It knows nothing of cutover's reference service. It reaches cutover only through what any team
would use: import strings in its own plan (``shop/cutover.toml``), ``bridge.get_pool()``,
``bridge.looping.LoopingTasks`` / ``bridge.tasks.TaskManager`` for its periodic job, and the
parity plugin.
"""
