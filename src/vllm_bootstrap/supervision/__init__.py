"""Running launches: admission, the child process and its lifetime, recovery after restarts."""
