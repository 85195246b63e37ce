"""Team mode: csmd mirrors what a member shares into one PostgreSQL, and csm reads it back (README "Team").

Nothing here is imported unless ``[team]`` is configured or a ``--team`` command runs, so csm
without team mode never loads psycopg.
"""
