"""The pop3mon probe engine: importable and testable without pytest."""
