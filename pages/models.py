import streamlit as st
st.title('Models')
st.info('coming soon')
