"""What a launch is: its record, states, storage, logs, and the registry others read."""
