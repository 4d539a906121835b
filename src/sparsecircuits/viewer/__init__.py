"""Viewer: one local web app (and its static export) for models, circuits, units and prompts.

site.py gathers what is shown (runs, circuit files, the explanations database) behind ids;
links.py names every page for the live server or for files on disk; pages.py renders each page
through autoescaped templates; server.py serves them on 127.0.0.1 (Starlette + uvicorn) with
the live-only prompt page; export.py writes the same pages as static files. Imports every
earlier stage; nothing imports it.
"""
