// PostgreSQL-only cluster tables (leader election, issue 15) live here; h15b's version replaces this placeholder.
export {};
