; A minimal real NSIS installer for the hsmsign demo.
Name "hsmsign demo"
OutFile "hsmsign-demo-setup.exe"
RequestExecutionLevel user
InstallDir "$LOCALAPPDATA\hsmsign-demo"
Unicode true
Section
  SetOutPath "$INSTDIR"
  FileOpen $0 "$INSTDIR\readme.txt" w
  FileWrite $0 "Installed by a signed installer."
  FileClose $0
SectionEnd
