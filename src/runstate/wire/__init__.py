"""The HTTP API's wire format, shared by the server (``runstate serve``) and the remote store
(``runstate+http://``): the JSON form of every value (``values``) and of every error, as
RFC 9457 problem documents (``problems``)."""
