"""One router per concern; ``service.http.app`` assembles them."""
