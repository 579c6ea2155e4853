"""Real parts for the tests: a loopback registry, images built here, the webhook as a process."""
