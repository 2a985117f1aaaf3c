"""One router per concern: pages, predict, studies (+ reports), system (health, model)."""
