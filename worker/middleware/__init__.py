"""tokenwarden's dramatiq middleware, one per module (as dramatiq keeps its own).

logging_context  binds the message id and actor to every log line written while it is handled
dead_letters     keeps a message the worker gave up on where `tokenwarden events dead` shows it

worker/broker.py installs LogContext with dramatiq's middleware; worker/actors.py adds
DeadLetterWhenGivenUp once the handler it records through exists.
"""
