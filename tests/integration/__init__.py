"""Integration tests against a real OpenID provider and real JWT login APIs."""
