"""The trust boundary between the privileged side (spawner, workers) and the server.

Standard library only, reviewed as one unit: the typed messages (messages.py), the wire that
carries them with fds (wire.py), how a child interpreter is started isolated (runner.py) and
how a batch of jobs is shared among workers (plan.py). The spawner, the compile and config
workers and the server's client all import it; none of it imports pydantic or bcc.
"""
