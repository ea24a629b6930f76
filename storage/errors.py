"""Errors the store raises; the desk turns each into its HTTP status and error code."""


class StoreError(Exception):
    status = 400
    code = "bad_request"


class NotFound(StoreError):
    status = 404
    code = "not_found"


class IllegalMove(StoreError):
    status = 409
    code = "illegal_move"


class Conflict(StoreError):
    status = 409
    code = "conflict"


class Invalid(StoreError):
    status = 422
    code = "invalid"
