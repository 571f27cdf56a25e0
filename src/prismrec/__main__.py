from prismrec.cli import app

app(prog_name="prismrec")
