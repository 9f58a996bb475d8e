"""The wire contract: request envelope, signed payload and queue envelope. Imports nothing of ours."""
