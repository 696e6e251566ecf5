"""The control plane's HTTP face: routes, request schemas, access key, middleware, errors."""
