"""The tests' PostgreSQL is a real server: what one connection commits, another reads."""

from sqlalchemy import create_engine, text

from pg import postgres_url  # noqa: F401  (a fixture: pytest finds it by name)


def test_two_connections_share_a_real_postgresql(postgres_url: str) -> None:  # noqa: F811
    engine = create_engine(postgres_url)
    pid = text("SELECT pg_backend_pid()")
    try:
        with engine.connect() as writer, engine.connect() as reader:  # both open: two server sessions
            assert writer.execute(pid).scalar_one() != reader.execute(pid).scalar_one()
            writer.execute(text("CREATE TABLE runs (id serial PRIMARY KEY, name text NOT NULL)"))
            writer.execute(text("INSERT INTO runs (name) VALUES (:name)"), {"name": "trial-1"})
            writer.commit()
            assert reader.execute(text("SELECT name FROM runs")).scalars().all() == ["trial-1"]
            version = reader.execute(text("SELECT version()")).scalar_one()
            major = int(reader.execute(text("SHOW server_version_num")).scalar_one()) // 10000
    finally:
        engine.dispose()
    assert "PostgreSQL" in version, version
    assert major >= 15, version
