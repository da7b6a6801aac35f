"""HTTP routes of the api, one module per resource."""
