module dewyoracle

go 1.19
