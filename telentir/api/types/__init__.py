"""The API's inputs and outputs as msgspec Structs: one description, read by the routes and the OpenAPI document."""
