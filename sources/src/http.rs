//! The HTTP client every HTTP source shares (timeouts, user agent, TLS, proxies).
