"""The data plane: /proxy/{id} and /v1, forwarding requests to ready launches."""
