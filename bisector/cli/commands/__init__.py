"""The commands, one module each (repair and merge together), registered here on cli.root.app
in the order `bisector --help` lists them."""

from __future__ import annotations

from bisector.cli.commands import clean, find, fix, fixers, measure, repair, report, schema
from bisector.cli.root import app

app.command()(measure.measure)
app.command()(find.find)
app.command()(fix.fix)
app.command("report")(report.report_command)
app.command()(repair.repair)
app.command()(repair.merge)
app.command("fixers")(fixers.list_fixers)
app.command("schema")(schema.schema_command)
app.command("clean")(clean.clean_command)
